"""``python -m cli``: the same as the ``bertqueue`` console command."""
from cli.main import run

if __name__ == "__main__":
    run()
