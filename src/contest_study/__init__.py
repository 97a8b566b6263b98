"""Shared code of the ISTRATI_LUCIAN multi-label image-classification study.

Modules, each named for what it does:

- ``config``     -- profiles (smoke / default / full) and where things live
- ``synthetic``  -- the embedded default dataset, written in the contest layout
- ``data``       -- the contest-folder loader, its cache and the split logic
- ``inspection`` -- black-image and duplicate detection for the data analysis
- ``metrics``    -- per-class average precision, F1 with tuned thresholds
- ``models``     -- one builder function per architecture of the study
- ``training``   -- the single training engine used by every experiment
- ``registry``   -- the results registry that makes every run reusable
- ``plots``      -- the figures of the study
- ``export``     -- notebook/.py sync, headless execution and the submission zip
"""

__version__ = "0.1.0"
