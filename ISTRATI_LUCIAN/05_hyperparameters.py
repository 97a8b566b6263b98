# %% [markdown]
# # 05 — Hyperparameters
#
# The source study tried a grid of training choices and asked that every
# approach be documented, the failed ones too:
#
# - **epochs** 5 or 10; **learning rate** 1e-3, 1e-2 or 1e-1; **optimizer**
#   Adam or SGD; **loss** binary or categorical cross-entropy; **training
#   metric** F1 or accuracy; and **batch sizes** 32, 64 or 128 — 144
#   combinations for the chosen CNN, a smaller grid for the recurrent and the
#   fully connected networks;
# - **dropout and kernel initializer** of the 4-hidden-layer network, tuned
#   with scikit-learn (`GridSearchCV`, cross-validated, scored by mean average
#   precision over the three labels);
# - **learning-rate schedules**: constant, exponential decay, warm-up then
#   decay, and ReduceLROnPlateau.
#
# Binary cross-entropy is paired with the sigmoid head (three independent
# yes/no questions) and categorical cross-entropy with a softmax head (one
# distribution over the labels, what that loss is designed for).
#
# Every trial is an ordinary run of the study's training engine, stored in
# the results registry: re-running the notebook trains nothing new, an
# interrupted trial resumes, and the trials of a search spread over several
# machines (`scripts/distributed_search.py`, see the README) are found here
# instead of being trained again. The search itself goes through keras-tuner,
# which hands the planned trials out to this process or to remote workers.

# %%
# The shared package does the work; the notebook chooses what to run and explains it.
from IPython.display import Markdown, display

from contest_study import plots, tuning
from contest_study.study import open_study

# Data, registry, profile and oracle of this run, as set by scripts/export_submission.py.
study = open_study()
# How much of the study this profile runs (subsample, grids), defined in contest_study.tuning.
plan = tuning.plan_for(study.context.profile)
# Runs each trial through the engine and the registry; prints one line per trial it trains.
runner = tuning.TrialRunner(study)
figures_dir = study.context.figures_dir
# keras-tuner's own bookkeeping; the registry is what remembers the trials.
search_dir = study.context.cache_dir / "keras_tuner"
# Every table and figure this notebook writes, listed at the end.
written = []

# %% [markdown]
# ## What this run covers
#
# The complete grid at full size needs a GPU; the `default` profile fits a
# 2-core CPU by training every trial on a seeded subsample and by covering
# 5 epochs, the batch sizes and the training metric on slices of the grid.
# The plan below says exactly what runs.

# %%
# The CNN the grid tunes and the trials of its grid, then the plan in words.
cnn_model, cnn_reason = tuning.plan_model(study, plan, "cnn")
cnn_trials = tuning.make_trials(cnn_model, tuning.grid_combinations(plan.cnn_grids, plan.fixed), plan)
grid_data = runner.trial_data(cnn_trials[0])
display(Markdown(tuning.describe_plan(plan, grid_data, cnn_reason, len(cnn_trials))))

# %% [markdown]
# ## The grid on the CNN
#
# Each trial trains with a constant learning rate (schedules are compared
# later) and early stopping on the validation loss. The table holds every
# trial; the heatmaps show the trials at the plan's usual number of epochs,
# batch size and training metric. A trial *failed to learn* when it closes
# less than a tenth of the gap between guessing (the mAP of a constant
# score: each label's positive rate) and the best achievable score (the
# oracle's on the embedded dataset, else the best trial's), on the
# non-black validation images.

# %%
# Run every planned CNN trial (finished ones come straight from the registry).
cnn_outcome = tuning.run_search(runner, cnn_trials, directory=search_dir, name="cnn_grid")
# mAP of a score that ranks nothing, on the non-black validation images of these trials.
chance = tuning.chance_map(grid_data.data.val)
cnn_table = tuning.trials_table(cnn_outcome, chance)
written.append(tuning.save_table(cnn_table, "05_cnn_grid", figures_dir))
learnable, learnable_source = tuning.learnable_map(cnn_outcome)
display(Markdown(f"{len(cnn_table)} trials; on the non-black validation images guessing scores a mAP of "
                 f"{chance:.3f} and {learnable_source} {learnable:.3f}. " + tuning.describe_crashes(cnn_table)))
cnn_table.drop(columns=["model", "key", "error"], errors="ignore").round(4)

# %%
# Learning rate x optimizer, one heatmap per loss, at the grid's usual epochs, batch size and metric.
usual = plan.fixed
for loss, rows in tuning.usual_slice(cnn_table, plan).groupby("loss"):
    figure = plots.heatmap(
        rows, "learning_rate", "optimizer", "val mAP",
        title=f"{cnn_model}: val mAP, {loss} with a {tuning.HEAD_FOR_LOSS[loss]} head "
              f"({usual['epochs']} epochs, batch {usual['batch_size']})",
    )
    written.append(plots.save_figure(figure, f"05_cnn_heatmap_{loss}", figures_dir))

# %%
# Batch size x optimizer with the sigmoid head, averaged over the learning rates tried with every batch size.
figure = plots.heatmap(tuning.batch_size_slice(cnn_table, plan), "batch_size", "optimizer", "val mAP",
                       title=f"{cnn_model}: val mAP by batch size (binary cross-entropy, {usual['epochs']} epochs)")
written.append(plots.save_figure(figure, "05_cnn_heatmap_batch_size", figures_dir))

# %% [markdown]
# ## Why the failures fail
#
# Each paragraph states the mechanism and then the numbers of this run.

# %%
# The softmax head with categorical cross-entropy, measured on this run's trials and labels.
display(Markdown(tuning.describe_softmax(cnn_table, cnn_outcome, grid_data.data.val, grid_data.data.train)))

# %%
# What each learning rate does with each optimizer, against the loss of predicting the base rates.
display(Markdown(tuning.describe_learning_rates(cnn_table, tuning.base_rate_loss(grid_data.data.train))))

# %%
# Whether the training metric changes anything but the logs, from the pairs that differ only by it.
display(Markdown(tuning.describe_training_metric(cnn_table, cnn_outcome)))

# %%
# Epochs and batch sizes, compared on trials equal in every other setting.
display(Markdown(tuning.describe_epochs_and_batches(cnn_table)))

# %% [markdown]
# ## A smaller grid for the recurrent and the fully connected network
#
# Learning rate and optimizer, with the sigmoid head and binary
# cross-entropy: the settings the CNN grid shows to matter most.

# %%
# The network of each family and its grid, run like the CNN's.
small_tables = {}
for family in ("rnn", "fully_connected"):
    model, reason = tuning.plan_model(study, plan, family)
    grid = plan.rnn_grid if family == "rnn" else plan.fc_grid
    if grid is None:
        display(Markdown(f"**{family}**: the `{plan.profile}` profile skips this grid to save time."))
        continue
    trials = tuning.make_trials(model, tuning.grid_combinations([grid], plan.fixed), plan)
    outcome = tuning.run_search(runner, trials, directory=search_dir, name=f"{family}_grid")
    small_tables[model] = tuning.trials_table(outcome, chance)
    written.append(tuning.save_table(small_tables[model], f"05_{family}_grid", figures_dir))
    display(Markdown(f"**{family}**: {reason} {tuning.plural(len(trials), 'trial')}. " + tuning.describe_crashes(small_tables[model])))
    figure = plots.heatmap(small_tables[model], "learning_rate", "optimizer", "val mAP",
                           title=f"{model}: val mAP (binary cross-entropy)")
    written.append(plots.save_figure(figure, f"05_{family}_heatmap", figures_dir))

# %%
# Both tables, best validation mAP first.
for model, table in small_tables.items():
    display(Markdown(f"**{model}**"))
    display(table.drop(columns=["model", "key", "error"], errors="ignore").round(4))

# %%
# What each grid shows, in words, as for the CNN.
base_loss = tuning.base_rate_loss(grid_data.data.train)
for model, table in small_tables.items():
    display(Markdown(tuning.describe_grid(table, model) + " "
                     + tuning.describe_learning_rates(table, base_loss, mechanism=False)))

# %% [markdown]
# ## Dropout and kernel initializer with scikit-learn
#
# Keras's own scikit-learn wrapper makes the 4-hidden-layer network an
# estimator; `GridSearchCV` cross-validates every pair of dropout rate and
# kernel initializer on the training images and scores each fold by the mean
# average precision of the three labels. The best pair is refit on all the
# training images and scored on validation and hold-out like every other
# run; the search, its results and the refit model are one registry entry.

# %%
# The whole cross-validated search (or its stored result).
sklearn_record = tuning.sklearn_search(runner, plan)
cv_table = tuning.cv_results_table(sklearn_record)
written.append(tuning.save_table(cv_table, "05_sklearn_cv_results", figures_dir))
cv_table.round(4)

# %%
# Mean cross-validated mAP of each pair.
figure = plots.heatmap(cv_table, "dropout", "kernel_initializer", "mean CV mAP",
                       title="fc_3a: mean CV mAP (GridSearchCV)")
written.append(plots.save_figure(figure, "05_sklearn_heatmap", figures_dir))

# %%
# The result in words; a constant score's mAP on the training labels is the floor.
display(Markdown(tuning.describe_sklearn(sklearn_record, cv_table, tuning.chance_map(grid_data.data.train))))

# %% [markdown]
# ## Learning-rate schedules
#
# The best settings of the CNN grid, trained again with each schedule:
# constant; exponential decay (×0.85 per epoch); one epoch of linear
# warm-up then a cosine decay; and ReduceLROnPlateau (halving the rate when
# the validation loss stalls).

# %%
# Four runs that differ only by the schedule.
best_grid = tuning.best_trial(cnn_table)
schedule_trials = tuning.schedule_trials(cnn_model, tuning.best_config(best_grid), plan)
schedule_outcome = tuning.run_search(runner, schedule_trials, directory=search_dir, name="lr_schedules")
schedule_table = tuning.trials_table(schedule_outcome, chance)
written.append(tuning.save_table(schedule_table, "05_lr_schedules", figures_dir))
schedule_table[["lr_schedule", "val mAP", "val mAP (non-black)", "holdout mAP", "epochs run", "status"]].round(4)

# %%
# Loss and learning rate per epoch of the four schedules.
figure = plots.learning_curves({spec.config.lr_schedule: record.history
                                for spec, record in schedule_outcome.pairs() if record is not None})
written.append(plots.save_figure(figure, "05_lr_schedules_learning_curves", figures_dir))

# %%
# The comparison in words.
display(Markdown(tuning.describe_schedules(schedule_table)))

# %% [markdown]
# ## The final choice
#
# The best configuration by validation mAP, grid and schedule together. It
# is written to `figures/05_best_configuration.json`, for the summary to
# read (`tuning.read_best_configuration`).

# %%
# The chosen hyperparameters and their evidence, saved for the summary.
best_schedule = tuning.best_trial(schedule_table)
configuration = tuning.best_configuration(cnn_model, best_grid, best_schedule, plan, len(cnn_trials))
written.append(tuning.save_best_configuration(configuration, figures_dir))
display(Markdown(tuning.describe_final_choice(configuration)))

# %%
# The tables (CSV), heatmaps and the chosen configuration this notebook wrote.
display(Markdown("\n".join(f"- `{path.name}`" for path in written)))
