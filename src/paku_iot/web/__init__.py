"""Everything served over HTTP: `app.create_app` composes the API (`web.api`) and the admin
dashboard (`web.ui`) around a running `Service`. Neither imports the other."""
