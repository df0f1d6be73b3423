"""``python -m unioncam_rt.serve [OPTIONS]``: the serve command on its own."""

import typer

from .command import serve_command


def main() -> None:
    app = typer.Typer(add_completion=False)
    app.command()(serve_command)
    app()


if __name__ == "__main__":
    main()
