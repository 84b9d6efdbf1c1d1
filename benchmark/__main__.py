from benchmark.cli import run

run()
