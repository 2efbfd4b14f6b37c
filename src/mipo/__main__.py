from mipo.cli import run

run()
