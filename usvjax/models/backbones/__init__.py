"""ImageNet backbones shared by the methods (see ``resnet.py``) and their weight importer."""
