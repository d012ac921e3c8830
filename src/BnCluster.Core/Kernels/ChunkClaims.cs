namespace BnCluster.Core.Kernels;

/// <summary>
/// The chunks of one parallel job that its parts claim (<see cref="GemmJob"/>'s products, <see cref="RangeJob"/>'s
/// passes): each part runs the chunks of its own share in order, then takes the other parts' left over, from their far
/// end (<see cref="Order"/>), so a part on a vCPU the host slows down leaves its last chunks to the others. Each chunk is
/// run by exactly one part. Reset on the caller before dispatch; the flags grow only, so a dispatch allocates nothing.
/// </summary>
internal sealed class ChunkClaims
{
    private int[] _taken = [];
    private int _parts;

    /// <summary>Makes chunks [0, <paramref name="count"/>) free again for a run on <paramref name="parts"/> parts.</summary>
    public void Reset(int count, int parts)
    {
        _parts = parts;
        if (_taken.Length < count) _taken = new int[Math.Max(count, 2 * _taken.Length)]; // (a larger job than any before)
        else Array.Clear(_taken, 0, count);
    }

    /// <summary>Takes chunk <paramref name="index"/> if no part has yet (one part takes everything without a flag).</summary>
    public bool TryClaim(int index) => _parts == 1 || Interlocked.Exchange(ref _taken[index], 1) == 0;

    /// <summary>First chunk of part <paramref name="part"/>'s own share of <paramref name="chunks"/> (its end: part + 1).</summary>
    public static int ShareStart(int part, int parts, int chunks) => (int)((long)chunks * part / parts);

    /// <summary>
    /// The chunks of [0, <paramref name="chunks"/>) in the order part <paramref name="part"/> tries them: its own share
    /// ascending, then the others' descending; with <paramref name="foreignFirst"/> (tests) the others' first.
    /// </summary>
    public static ClaimOrder Order(int part, int parts, int chunks, bool foreignFirst = false) =>
        new(ShareStart(part, parts, chunks), ShareStart(part + 1, parts, chunks), chunks, foreignFirst);
}

/// <summary>The order of <see cref="ChunkClaims.Order"/>, as an allocation-free enumerator.</summary>
internal ref struct ClaimOrder(int own0, int own1, int chunks, bool foreignFirst)
{
    private int _half;  // 0 and 1: the own share and the others' chunks, in the order asked; 2: done
    private int _step;  // position within the current half
    private int _current;

    public readonly int Current => _current;

    public readonly ClaimOrder GetEnumerator() => this;

    public bool MoveNext()
    {
        for (; _half < 2; _half++, _step = 0)
        {
            if ((_half == 0) != foreignFirst)
            {
                if (own0 + _step < own1)
                {
                    _current = own0 + _step++;
                    return true;
                }
            }
            else if (_step < chunks - (own1 - own0))
            {
                // Descending over every chunk but the own share's: chunks − 1 … own1, then own0 − 1 … 0.
                int k = chunks - 1 - _step++;
                _current = k < own1 ? k - (own1 - own0) : k;
                return true;
            }
        }
        return false;
    }
}
