"""gsr: generalizable (blind) image super-resolution on BasicSR."""
from setuptools import find_packages, setup

setup(
    name='gsr',
    version='0.1.0',
    description='Generalizable blind super-resolution extensions for BasicSR',
    long_description=open('README.md', encoding='utf-8').read(),
    long_description_content_type='text/markdown',
    packages=find_packages(include=('gsr', 'gsr.*')),
    include_package_data=True,
    package_data={'gsr': ['options/*.yml', 'pretrained/*.pth', 'pretrained/manifest.json']},
    python_requires='>=3.9',
    # torch and torchvision are installed first by the Makefile (CPU or CUDA build, see docs/INSTALL.md);
    # basicsr needs torch at build time, so it is installed with --no-build-isolation after torch.
    install_requires=[
        'torch', 'torchvision', 'basicsr==1.4.2', 'numpy', 'opencv-python', 'Pillow', 'PyYAML', 'lmdb',
        'scikit-image', 'scikit-learn', 'matplotlib', 'tqdm', 'lpips'
    ],
    extras_require={
        # `gsr export`: ONNX graph (onnxscript is the exporter torch.onnx uses) checked with onnxruntime.
        'export': ['onnx', 'onnxscript', 'onnxruntime'],
        'test': ['pytest', 'pytest-timeout', 'flake8', 'isort>=9,<10', 'onnx', 'onnxscript', 'onnxruntime'],
    },
    entry_points={'console_scripts': ['gsr = gsr.cli:main', 'basicsr = gsr.cli:main']},
)
