"""Matplotlib without a display, and figures written atomically as PNG."""
import io

from gsr.utils.checkpoint import atomic_write_bytes


def pyplot():
    """``matplotlib.pyplot`` on the Agg backend (no display needed)."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    return plt


def save_figure(fig, path: str, dpi: int = 120) -> None:
    """Write ``fig`` to ``path`` as PNG, atomically, and close it."""
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format='png', dpi=dpi)
    pyplot().close(fig)
    atomic_write_bytes(path, buf.getvalue())
