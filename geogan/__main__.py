from geogan.cli import app

app()
