"""The `paku-iot` command: `main` parses and dispatches; `admin` and `tokens` are the
operator's commands, `apiclient` the HTTP client they use, and `runner` runs `dev`/`serve`."""
