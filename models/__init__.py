"""genserve's model zoo: one readable file per model family, plus data, training and artifacts.

Imports only torch, numpy, scikit-learn, skops, safetensors and the stdlib, so the web service
and offline scripts share exactly the same model code.
"""
