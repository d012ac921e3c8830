namespace BnCluster.Actors.Remote;

// Remote DeathWatch for a stopped actor (a removed node is handled by the cluster).
// Watcher node → watchee node's /system/remote-watcher: RemoteWatch(path);
// watchee node → the sender (watcher node's remote-watcher): RemoteWatcheeTerminated(path).
internal sealed record RemoteWatch(string WatcheePath);
internal sealed record RemoteWatcheeTerminated(string WatcheePath);

/// <summary>At <c>/system/remote-watcher</c>: watches local actors for remote nodes, and turns their
/// stop notices into Terminated for the local watchers of remote refs.</summary>
internal sealed class RemoteWatcher : ReceiveActor
{
    private readonly Dictionary<IActorRef, (string Path, HashSet<IActorRef> Nodes)> _watchedForRemotes = [];

    public RemoteWatcher(RemoteTransport transport)
    {
        Receive<RemoteWatch>(w =>
        {
            IActorRef? watchee;
            try { watchee = Context.System.ResolveLocal(ActorPath.Parse(w.WatcheePath)); }
            catch (FormatException) { watchee = null; }
            if (watchee is null or PromiseActorRef)
            {
                Sender.Tell(new RemoteWatcheeTerminated(w.WatcheePath));
                return;
            }
            if (!_watchedForRemotes.TryGetValue(watchee, out var entry))
            {
                _watchedForRemotes[watchee] = entry = (w.WatcheePath, []);
                Context.Watch(watchee);
            }
            entry.Nodes.Add(Sender);
        });
        Receive<Terminated>(t =>
        {
            if (!_watchedForRemotes.Remove(t.ActorRef, out var entry)) return;
            foreach (var node in entry.Nodes) node.Tell(new RemoteWatcheeTerminated(entry.Path));
        });
        Receive<RemoteWatcheeTerminated>(t => transport.WatcheeTerminated(t.WatcheePath));
    }
}
