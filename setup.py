"""pip-installable package: `pip install .` or `pip install -e .[test]`."""

from setuptools import find_packages, setup

setup(
    name="tf_qnets",
    version="0.1.0",
    description="Quantization Networks (Yang et al., CVPR 2019) for Keras / TensorFlow Model Optimization",
    long_description=open("README.md", encoding="utf-8").read() if __import__("os").path.exists("README.md") else "",
    long_description_content_type="text/markdown",
    packages=find_packages(include=["tf_qnets", "tf_qnets.*"]),
    python_requires=">=3.10",
    install_requires=[
        "tensorflow>=2.16,<2.22",
        "tf-keras>=2.16,<2.22",
        "tensorflow-model-optimization>=0.8.0",
        "numpy",
    ],
    extras_require={
        "test": ["pytest>=7", "pytest-xdist>=3", "hypothesis>=6", "ai-edge-litert"],
        "litert": ["ai-edge-litert"],
        "examples": ["matplotlib"],
        "tensorboard": ["tensorboard"],
        "imagenet": ["tensorflow-datasets>=4.9"],
    },
    entry_points={"console_scripts": ["tf-qnets=tf_qnets.cli:main"]},
    license="Apache-2.0",
)
