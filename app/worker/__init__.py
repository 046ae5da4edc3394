"""What runs inside a worker process (or Ray actor): the worker loop, dynamic and continuous
batching, the executors. The API process imports only `app.worker.protocol` from here."""
