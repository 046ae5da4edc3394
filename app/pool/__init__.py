"""The engine boundary, API side: the API submits work to a pool and never runs model code.

`base` is the interface and the half every backend shares, `local` and `ray_pool` the
backends, `errors` what can go wrong (without HTTP statuses: app/errors.py maps them).
"""
