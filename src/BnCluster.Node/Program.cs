namespace BnCluster.Node;

public static class Program
{
    public static int Main(string[] args)
    {
        Console.Error.WriteLine("bncluster: not yet wired up");
        return 2;
    }
}
