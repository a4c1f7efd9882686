"""Experiment configs, organised as ``bcos/experiments/<dataset>/<base_network>/``.

Each collection folder holds ``experiment_parameters.py`` (``CONFIGS``: experiment name -> config
dict) and ``model.py`` (``get_model(model_config)``). Use
``bcos.experiments.utils.get_configs_and_model_factory(dataset, base_network)`` to load one and
``bcos.experiments.utils.list_collections()`` to see them all; run
``python -m bcos.experiments.<dataset>.<base_network>.experiment_parameters --help`` to inspect one.
"""
