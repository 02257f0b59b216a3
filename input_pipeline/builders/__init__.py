"""TFDS builders; importing this package registers them with TFDS.

| name | layout | task |
|---|---|---|
| ``usv_synthetic`` | the B-mode simulator (no files needed) | both |
| ``usv_davis`` | DAVIS-2017 (UVBLS200) | segmentation |
| ``usv_flanet`` | FLA-Net's img_list/mask_list | segmentation |
| ``usv_frames_table`` | flat frames + frame-to-video table (CVC-612) | segmentation |
| ``usv_cine_table`` | video files or DICOM cine loops + table, masks by frame number | segmentation |
| ``usv_video_table`` | video files or frame folders + label CSV (POCUS) | classification |

The builders of files on disk check the whole dataset before converting it (``checks``).
"""
from input_pipeline.builders.cine_table import UsvCineTable
from input_pipeline.builders.davis import UsvDavis
from input_pipeline.builders.flanet_layout import UsvFlanet
from input_pipeline.builders.frames_table import UsvFramesTable
from input_pipeline.builders.usv_synthetic import UsvSynthetic
from input_pipeline.builders.video_table import UsvVideoTable

__all__ = ['UsvCineTable', 'UsvDavis', 'UsvFlanet', 'UsvFramesTable', 'UsvSynthetic', 'UsvVideoTable']
