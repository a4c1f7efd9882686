"""Names that tie the config system to the package layout and to run folders.

Configs live in ``<ROOT>.<BASE_EXPERIMENTS_DIRECTORY>.<dataset>.<base_network>``: the module
``<CONFIGS_MODULE>`` defines ``<CONFIGS_VAR_NAME>`` (experiment name -> config dict) and the module
``<MODEL_FACTORY_MODULE>`` defines ``<MODEL_FACTORY_VAR_NAME>(model_config)``. Training runs are
written to ``<BASE_EXPERIMENTS_DIRECTORY>/<dataset>/<base_network>/<experiment_name>/`` relative to
the working directory (a different tree from the configs, so a failed run can be deleted safely).
"""

__all__ = [
    "ROOT",
    "BASE_EXPERIMENTS_DIRECTORY",
    "MODEL_FACTORY_MODULE",
    "MODEL_FACTORY_VAR_NAME",
    "CONFIGS_MODULE",
    "CONFIGS_VAR_NAME",
    "CHECKPOINT_LAST_FILENAME",
]

ROOT = "bcos"
BASE_EXPERIMENTS_DIRECTORY = "experiments"

MODEL_FACTORY_MODULE = "model"
MODEL_FACTORY_VAR_NAME = "get_model"
CONFIGS_MODULE = "experiment_parameters"
CONFIGS_VAR_NAME = "CONFIGS"

CHECKPOINT_LAST_FILENAME = "last.ckpt"
