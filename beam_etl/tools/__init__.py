"""The development tools: a sample-data generator and a small U-Net. Only the loader's command
line imports one (the U-Net, for ``--train_steps``)."""
