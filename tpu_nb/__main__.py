"""``python -m tpu_nb run``: runs a program written for the original TPUEstimator unchanged.

    python -m tpu_nb run mnist_tpu.py --use_tpu=False --train_steps=10
    python -m tpu_nb run --simulate 8x2 mnist_tpu.py --train_steps=10
    python -m tpu_nb run -m pytest tests_written_for_the_original/

(``tpu-nb run ...`` is the same command as a console script.) See ``tpu_nb.dropin.runner``.
"""

import sys

from tpu_nb.dropin.runner import main

if __name__ == "__main__":
    sys.exit(main())
