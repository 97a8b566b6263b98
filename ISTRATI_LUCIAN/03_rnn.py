# %% [markdown]
# # 03 — Recurrent neural networks
#
# A recurrent network reads a sequence one step at a time and carries a
# memory from step to step. An image becomes a sequence if it is read row
# by row: 64 steps of 64 pixels each. The network then has to assemble a
# shape from the rows it has seen, with no built-in notion that the same
# shape one row lower is still the same shape. Two recurrent networks were
# tried:
#
# - **2.a** an LSTM with 64 units reading the rows top to bottom;
# - **2.b** a bidirectional GRU, which reads the rows in both directions
#   and joins what it remembers from each.
#
# Both end in the same three sigmoid outputs and are trained by the same
# engine and on the same images as the CNNs (black images removed but one),
# without augmentation.

# %%
# The shared package does the work; the notebook chooses what to run and explains it.
from IPython.display import Markdown, display

from contest_study.study import open_study

# Data, registry, profile and oracle of this run, as set by scripts/export_submission.py.
study = open_study()
print(f"profile: {study.context.profile.name}; training images: {len(study.data.train)}")

# %%
# The recurrent architectures, their description and size.
architectures = study.architectures("rnn")
architectures

# %% [markdown]
# ## Training

# %%
# Train (or reuse from the registry) both recurrent networks.
rnn_runs = {name: study.train(name) for name in architectures.index}

# %% [markdown]
# ## Results
#
# Average precision per label on validation, with the hold-out beside it.

# %%
# One row per network, best validation mAP first.
rnn_table = study.table(rnn_runs.values())
rnn_table.drop(columns=["description", "key"]).round(4)

# %%
# Per-class AP bars, learning curves and precision-recall curves, saved to figures/.
rnn_figures = study.comparison_figures(rnn_runs, prefix="03_rnn")
rnn_figures["per_class_ap"]

# %%
# Loss per epoch: recurrent networks on images tend to learn slowly and plateau early.
rnn_figures["learning_curves"]

# %%
# Precision-recall curves per label on the non-black validation images.
rnn_figures["precision_recall"]

# %%
# The best recurrent network by validation mAP.
best_rnn = study.best(rnn_runs.values())
display(Markdown(study.describe_best(best_rnn, "RNN")))

# %%
# Its predictions on validation images (blue right, red wrong) and its hold-out confusion matrices.
best_rnn_figures = study.best_run_figures(best_rnn, prefix="03_rnn_best")
best_rnn_figures["prediction_grid"]

# %%
# One confusion matrix per label on the hold-out split.
best_rnn_figures["confusion_matrices"]

# %% [markdown]
# ## The black-image experiment
#
# As for the CNNs: the best recurrent network trained with all black images
# kept and with all removed but one, scored on all validation images and on
# the non-black ones.

# %%
# Same network, same settings, two training sets.
black_table, black_runs = study.black_image_experiment(best_rnn.model)
black_table.round(4)

# %%
# The effect in words, computed from the two runs.
display(Markdown(study.describe_black_effect(black_table)))
