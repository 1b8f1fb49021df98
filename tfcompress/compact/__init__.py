"""Transferred and compact convolutional filters: filters made from a base set under a
group of transforms, and KxK convolutions replaced by compact blocks (separable,
flattened, fire)."""
