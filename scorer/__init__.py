"""scorer: score text with a BERT classifier, Parquet in, Parquet out.

    from scorer import Scorer, run
    Scorer.load().score(["a gorgeous, witty film"])   # default sentiment model
    run(["in.parquet"], "scored/")                    # what `scorer run` calls
"""

import os

# Set before TensorFlow or huggingface_hub is imported anywhere: nothing is ever downloaded,
# Keras runs on TensorFlow, and TensorFlow's C++ start-up chatter stays off the terminal.
from scorer.runtime import force_offline  # imports nothing heavy

force_offline()
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
# transformers (tokenizers and configs only, never its models) would announce that torch is absent.
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
# Level 3 (errors hidden too): loading a program from the persistent XLA cache logs two spurious
# "errors" per shape on every run (a text-format parse attempt and a CPU-feature note about
# tuning flags). Real failures still raise Python exceptions; set the variable to see them all.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from scorer.api import Scorer  # noqa: E402
from scorer.pipeline import run  # noqa: E402
from scorer.version import __version__  # noqa: E402

__all__ = ["Scorer", "run", "__version__"]
