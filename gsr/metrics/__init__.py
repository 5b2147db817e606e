"""Metrics of gsr: every `*_metric.py` here is imported and registered into BasicSR's registry."""
from os import path as osp

from gsr.utils.registration import import_modules

modules = import_modules(__name__, osp.dirname(osp.abspath(__file__)), '_metric.py')
