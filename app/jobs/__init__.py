"""Training jobs: the database side (store), the process that trains (runner), and the
supervisor that keeps runner processes alive beside the API."""
