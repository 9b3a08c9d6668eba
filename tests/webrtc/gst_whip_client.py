"""A WHIP publisher built on GStreamer's webrtcbin (Debian's python3-gi), for the e2e tests.

    /usr/bin/python3 tests/webrtc/gst_whip_client.py URL [--token T] [--seconds S]

videotestsrc → x264enc → rtph264pay (or vp9enc → rtpvp9pay) and audiotestsrc → opusenc → rtpopuspay into a
sendonly webrtcbin; the complete offer (after ICE gathering) is POSTed to the WHIP
URL, the answer applied. Prints JSON lines: {"status", "location", "body"}, then
{"state": ...} as the peer connection changes. Only 127.0.0.1 candidates are
offered (the test network rule); no STUN server.
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.request

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstWebRTC", "1.0")
gi.require_version("GstSdp", "1.0")
gi.require_version("Nice", "0.1")
from gi.repository import GLib, Gst, GstSdp, GstWebRTC, Nice  # noqa: E402

VIDEO = {
    "h264": "x264enc tune=zerolatency key-int-max={gop} speed-preset=ultrafast"
    " ! video/x-h264,profile=constrained-baseline"
    " ! rtph264pay config-interval=-1 aggregate-mode=zero-latency"
    " ! application/x-rtp,media=video,encoding-name=H264,payload=102",
    "vp9": "video/x-raw,format=I420 ! vp9enc deadline=1 cpu-used=8 keyframe-max-dist={gop} lag-in-frames=0"
    " ! rtpvp9pay ! application/x-rtp,media=video,encoding-name=VP9,payload=98",
}
PIPELINE = """
webrtcbin name=send bundle-policy=max-bundle
videotestsrc is-live=true pattern=ball ! video/x-raw,width=320,height=240,framerate=30/1
 ! videoconvert ! {video} ! send.
audiotestsrc is-live=true wave=sine ! audioconvert ! audioresample ! opusenc
 ! rtpopuspay ! application/x-rtp,media=audio,encoding-name=OPUS,payload=111 ! send.
"""


def say(message: dict[str, object]) -> None:
    print(json.dumps(message), flush=True)


def loopback_only(sdp: str) -> str:
    """Keeps the 127.0.0.1 host candidates of an SDP (the tests never leave loopback)."""
    lines = []
    for line in sdp.splitlines():
        if line.startswith("a=candidate:") and " 127.0.0.1 " not in line:
            continue
        lines.append(line)
    return "\r\n".join(lines) + "\r\n"


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("--token", default="")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--codec", choices=sorted(VIDEO), default="h264")
    parser.add_argument("--gop", type=int, default=60, help="frames between keyframes")
    parser.add_argument("--priority", type=int, default=None)
    args = parser.parse_args()
    Gst.init(None)
    pipeline = Gst.parse_launch(PIPELINE.format(video=VIDEO[args.codec].format(gop=args.gop)))
    webrtc = pipeline.get_by_name("send")
    loop = GLib.MainLoop()
    #: libnice leaves loopback out unless asked; the tests stay on 127.0.0.1
    address = Nice.Address.new()
    address.set_from_string("127.0.0.1")
    ice = webrtc.props.ice_agent  #: held for the pipeline's life (GI returns it unowned)
    agent = ice.props.agent
    agent.add_local_address(address)
    for transceiver_index in range(2):
        transceiver = webrtc.emit("get-transceiver", transceiver_index)
        if transceiver is not None:
            transceiver.set_property("direction", GstWebRTC.WebRTCRTPTransceiverDirection.SENDONLY)

    def post(offer_sdp: str) -> None:
        headers = {"Content-Type": "application/sdp"}
        if args.token:
            headers["Authorization"] = f"Bearer {args.token}"
        request = urllib.request.Request(
            args.url, data=offer_sdp.encode(), headers=headers, method="POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                status, body = response.status, response.read().decode()
                location = response.headers.get("Location")
        except urllib.error.HTTPError as exc:
            status, body, location = exc.code, exc.read().decode(), None
        say({"status": status, "location": location, "body": body})
        if status != 201:
            loop.quit()
            return
        _, message = GstSdp.SDPMessage.new_from_text(body)
        answer = GstWebRTC.WebRTCSessionDescription.new(GstWebRTC.WebRTCSDPType.ANSWER, message)
        webrtc.emit("set-remote-description", answer, None)

    def gathering_done(element: Gst.Element, _param: object) -> None:
        if (
            element.get_property("ice-gathering-state")
            == GstWebRTC.WebRTCICEGatheringState.COMPLETE
        ):
            local = element.get_property("local-description")
            GLib.idle_add(lambda: post(loopback_only(local.sdp.as_text())) and False)

    def offer_created(promise: Gst.Promise, _data: object) -> None:
        reply = promise.get_reply()
        offer = reply.get_value("offer")
        webrtc.emit("set-local-description", offer, None)

    def negotiation_needed(element: Gst.Element) -> None:
        element.emit("create-offer", None, Gst.Promise.new_with_change_func(offer_created, None))

    def state_changed(element: Gst.Element, _param: object) -> None:
        state = element.get_property("connection-state")
        say({"state": state.value_nick})

    webrtc.connect("on-negotiation-needed", negotiation_needed)
    webrtc.connect("notify::ice-gathering-state", gathering_done)
    webrtc.connect("notify::connection-state", state_changed)
    pipeline.set_state(Gst.State.PLAYING)
    GLib.timeout_add(int(args.seconds * 1000), lambda: loop.quit() or False)
    loop.run()
    pipeline.set_state(Gst.State.NULL)
    return 0


if __name__ == "__main__":
    sys.exit(main())
