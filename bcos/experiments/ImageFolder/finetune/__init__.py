"""Fine-tuning published B-cos models on ImageFolder data (see ``experiment_parameters``)."""
