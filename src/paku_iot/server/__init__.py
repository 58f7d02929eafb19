"""What runs inside `paku-iot serve`: the composition root (`service`), the background task
set, the Prometheus metrics, and the production checks made before anything starts."""
