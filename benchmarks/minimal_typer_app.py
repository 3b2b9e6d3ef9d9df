"""The cold-start baseline: the smallest Typer app, run as ``python benchmarks/minimal_typer_app.py``."""

import typer

app = typer.Typer()


@app.command()
def main() -> None:
    pass


app()
