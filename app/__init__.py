"""genserve: train and serve generative models and classifiers over HTTP."""

import os

# A Ray call made while the cluster is away must fail (and be retried), never start or join
# some other local cluster behind the API's back, as Ray's auto-connect would.
os.environ.setdefault("RAY_ENABLE_AUTO_CONNECT", "0")
