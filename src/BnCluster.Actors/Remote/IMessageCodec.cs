using BnCluster.Core.Serialization;

namespace BnCluster.Actors.Remote;

/// <summary>
/// Turns the messages of one protocol into MessagePack values and back, so remoting can carry
/// them (DESIGN §4: each message is an array <c>[type, …fields]</c>). Remoting holds a list of
/// codecs and asks each in turn; type ids must not overlap between codecs.
/// </summary>
public interface IMessageCodec
{
    /// <summary>Writes <paramref name="message"/> as one MessagePack value; false when this codec does not know its type.</summary>
    bool TryWrite(object message, MessagePackWriter writer);

    /// <summary>
    /// Called once after <see cref="TryWrite"/> wrote <paramref name="message"/> into an outbound frame: the
    /// message will not be read again, so a codec whose messages carry pooled buffers returns them here.
    /// </summary>
    void Sent(object message) { }

    /// <summary>
    /// True when <paramref name="message"/>'s frame may be large (tensors, big arrays): it is then always encoded and
    /// written by the connection's writer loop, never by the sending thread (which writes small frames itself when
    /// the connection is idle), so no actor spends its time encoding megabytes or blocks on a slow peer.
    /// </summary>
    bool MayBeLarge(object message) => false;

    /// <summary>True when <paramref name="typeId"/> (the first element of the array) belongs to this codec.</summary>
    bool Handles(int typeId);

    /// <summary>Reads one value written by <see cref="TryWrite"/>; malformed input throws <see cref="MessagePackException"/>.</summary>
    object Read(ref MessagePackReader reader);
}
