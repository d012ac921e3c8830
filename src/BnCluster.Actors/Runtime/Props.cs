namespace BnCluster.Actors;

/// <summary>How to create (and re-create, on restart) an actor.</summary>
public sealed class Props
{
    private Props(Func<ActorBase> factory, Type actorType)
    {
        Factory = factory;
        ActorType = actorType;
    }

    internal Func<ActorBase> Factory { get; }
    public Type ActorType { get; }

    /// <summary><c>Props.Create(() => new MyActor(a, b))</c>: the factory runs again on every restart,
    /// so it must return a fresh instance each time.</summary>
    public static Props Create<TActor>(Func<TActor> factory) where TActor : ActorBase
    {
        ArgumentNullException.ThrowIfNull(factory);
        return new Props(() => factory(), typeof(TActor));
    }

    public static Props Create<TActor>() where TActor : ActorBase, new() => new(() => new TActor(), typeof(TActor));
}
