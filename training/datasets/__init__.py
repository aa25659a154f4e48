"""Datasets with metric ground truth for training and evaluation."""
