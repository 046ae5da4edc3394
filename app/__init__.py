"""genserve: train and serve generative models and classifiers over HTTP."""
