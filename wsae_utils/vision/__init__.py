"""Vision experiment: images, backbones, contrastive training, SAEs on features."""
