"""``python -m hybridize_cli ...`` (also what torchrun launches)."""

from hybridize_cli.main import run

if __name__ == "__main__":
    run()
