"""gsr: generalizable (blind) super-resolution on BasicSR.

``import gsr`` first applies the BasicSR compatibility fixes (``gsr.compat``), then imports every
``*_arch.py``, ``*_dataset.py``, ``*_loss.py``, ``*_model.py`` and ``*_metric.py`` so that their classes are
registered in BasicSR's registries.
"""
from gsr import compat

compat.apply()

from gsr import archs, data, losses, metrics, models  # noqa: E402,F401  (registration side effects)

__version__ = '0.1.0'
