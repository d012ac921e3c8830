namespace BnCluster.Core.Training;

/// <summary>
/// A measurement hook of the single-node <see cref="Trainer"/> (the study's probes): called on the training loop after
/// each committed step, while <paramref name="ws"/> still holds that step's activations and each batch-norm layer's
/// mini-batch moments (<see cref="Workspace.GlobalStats"/>). Read-only by contract: it must change neither the
/// parameters nor the workspace. The trainer has none by default, so normal training pays one null check per step.
/// </summary>
public interface ITrainingObserver
{
    void StepCommitted(long step, Parameters p, Workspace ws);
}
