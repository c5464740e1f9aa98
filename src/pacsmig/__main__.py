from pacsmig.cli.main import run

run()
