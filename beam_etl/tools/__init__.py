"""The development tools: a sample-data generator and a small U-Net. Nothing in the library
imports them."""
