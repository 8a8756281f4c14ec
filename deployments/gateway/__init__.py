"""The gateway's HTTP side: routes in request order (``routes.py``), generation, jobs, access
control (keys, limits, usage, hardening), experiments and rollouts, errors, image decoding and
the playground."""
