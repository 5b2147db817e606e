"""After ``import gsr`` every gsr class is in its BasicSR registry, and BasicSR's own classes still are."""
from basicsr.utils.registry import ARCH_REGISTRY, DATASET_REGISTRY, LOSS_REGISTRY, METRIC_REGISTRY, MODEL_REGISTRY

import gsr  # noqa: F401

GSR_CLASSES = {
    ARCH_REGISTRY: ['MSRN', 'AttachedNetwork', 'ChannelDropout', 'AdaptiveDropout', 'ResidualConvAdapter'],
    MODEL_REGISTRY: ['GeneralizableSRModel'],
    DATASET_REGISTRY: ['PairedDegradationDataset', 'DegradedBenchmarkDataset'],
    LOSS_REGISTRY: ['FeatureAlignmentLoss', 'RFFAlignmentLoss', 'FeatureMatchingLoss'],
    METRIC_REGISTRY: ['calculate_lpips'],
}
BASICSR_CLASSES = {
    ARCH_REGISTRY: ['MSRResNet', 'RRDBNet', 'SwinIR', 'EDSR'],
    MODEL_REGISTRY: ['SRModel', 'SRGANModel', 'RealESRNetModel_basicsr'],
    DATASET_REGISTRY: ['PairedImageDataset', 'RealESRGANDataset_basicsr'],
    LOSS_REGISTRY: ['L1Loss', 'MSELoss', 'PerceptualLoss'],
    METRIC_REGISTRY: ['calculate_psnr', 'calculate_ssim'],
}


def test_gsr_classes_are_registered_under_their_own_module():
    for registry, names in GSR_CLASSES.items():
        for name in names:
            assert name in registry, f'{name} missing from {registry._name}'
            assert registry.get(name).__module__.startswith('gsr.')


def test_basicsr_classes_are_still_registered():
    for registry, names in BASICSR_CLASSES.items():
        for name in names:
            assert name in registry and registry.get(name).__module__.startswith('basicsr.')


def test_every_gsr_module_registers_something_or_is_a_registered_class_s_base():
    """A ``*_model.py`` (or ``*_arch.py`` ...) either registers a class or defines the base of registered ones."""
    from gsr import archs, data, losses, metrics, models
    registered = [obj for registry in GSR_CLASSES for _, obj in registry if obj.__module__.startswith('gsr.')]
    modules = {obj.__module__ for obj in registered}
    modules |= {base.__module__ for obj in registered if isinstance(obj, type) for base in obj.__mro__[1:]}
    for package in (archs, data, losses, metrics, models):
        for module in package.modules:
            assert f'{package.__name__}.{module}' in modules, module
