# %% [markdown]
# # 04 — Fully connected networks and classical references
#
# A fully connected network gives every pixel its own weight in every unit
# of the first layer. It has no notion of neighbourhood or of translation:
# a ring in the top-left corner and the same ring in the bottom-right are,
# to it, two unrelated patterns that it must learn separately. Two
# architectures were tried:
#
# - **3.a** the baseline of the course assignment: 4 hidden dense layers
#   (512-256-128-64), no regularisation;
# - **3.b** a wider, regularised network: 1024-512-256 units with batch
#   normalisation, dropout and L2 weight decay.
#
# Two classical models on the raw pixels give the floor of the comparison,
# in the same table: **k-nearest neighbours** (on 50 PCA components) and
# **logistic regression** (one per label).

# %%
# The shared package does the work; the notebook chooses what to run and explains it.
from IPython.display import Markdown, display

from contest_study.study import open_study

# Data, registry, profile and oracle of this run, as set by scripts/export_submission.py.
study = open_study()
print(f"profile: {study.context.profile.name}; training images: {len(study.data.train)}")

# %%
# The fully connected architectures, their description and size.
architectures = study.architectures("fully_connected")
architectures

# %% [markdown]
# ## Training

# %%
# Train (or reuse from the registry) both fully connected networks.
dense_runs = {name: study.train(name) for name in architectures.index}

# %%
# The classical references, fitted on the same training images (black images removed but one).
classical_runs = {name: study.baseline(name) for name in ("knn", "logistic_regression")}

# %% [markdown]
# ## Results
#
# Average precision per label on validation, with the hold-out beside it,
# for the two networks and the two classical references.

# %%
# One row per model, best validation mAP first.
dense_table = study.table([*dense_runs.values(), *classical_runs.values()])
dense_table.drop(columns=["description", "key"]).round(4)

# %%
# Per-class AP bars, learning curves and precision-recall curves, saved to figures/.
dense_figures = study.comparison_figures({**dense_runs, **classical_runs}, prefix="04_fully_connected")
dense_figures["per_class_ap"]

# %%
# Loss per epoch of the two networks: the wide one overfits less thanks to its regularisation.
dense_figures["learning_curves"]

# %%
# Precision-recall curves per label on the non-black validation images.
dense_figures["precision_recall"]

# %%
# The best fully connected network by validation mAP.
best_dense = study.best(dense_runs.values())
display(Markdown(study.describe_best(best_dense, "fully connected network")))

# %%
# Its predictions on validation images (blue right, red wrong) and its hold-out confusion matrices.
best_dense_figures = study.best_run_figures(best_dense, prefix="04_fully_connected_best")
best_dense_figures["prediction_grid"]

# %%
# One confusion matrix per label on the hold-out split.
best_dense_figures["confusion_matrices"]

# %% [markdown]
# ## The black-image experiment
#
# The best fully connected network trained with all black images kept and
# with all removed but one.

# %%
# Same network, same settings, two training sets.
black_table, black_runs = study.black_image_experiment(best_dense.model)
black_table.round(4)

# %%
# The effect in words, computed from the two runs.
display(Markdown(study.describe_black_effect(black_table)))
