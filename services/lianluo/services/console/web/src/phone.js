// The agent's phone in the browser: the microphone and a WebRTC connection to the voice service,
// open while the agent keeps it. A call the agent accepts on the desk is heard on it; nothing
// else rings. The offer is sent whole, its ICE candidates gathered first (no trickle).
import { api } from "./api.js";

function gathered(pc) {
  return new Promise((resolve) => {
    if (pc.iceGatheringState === "complete") return resolve();
    pc.addEventListener("icegatheringstatechange", () => {
      if (pc.iceGatheringState === "complete") resolve();
    });
  });
}

// Opens the phone; `onState` hears the connection's state ("connecting", "connected",
// "failed", ...). The caller's voice plays on `audio`.
export async function openPhone(audio, onState) {
  const microphone = await navigator.mediaDevices.getUserMedia({ audio: true });
  const pc = new RTCPeerConnection();
  microphone.getTracks().forEach((track) => pc.addTrack(track, microphone));
  pc.addEventListener("track", (event) => {
    audio.srcObject = event.streams[0] || new MediaStream([event.track]);
    audio.play().catch(() => {});
  });
  pc.addEventListener("connectionstatechange", () => onState(pc.connectionState));
  try {
    await pc.setLocalDescription(await pc.createOffer());
    await gathered(pc);
    const { sdp } = await api("POST", "/api/phone", { sdp: pc.localDescription.sdp });
    await pc.setRemoteDescription({ type: "answer", sdp });
  } catch (refused) {
    microphone.getTracks().forEach((track) => track.stop());
    pc.close();
    throw refused;
  }
  return {
    async close() {
      microphone.getTracks().forEach((track) => track.stop());
      pc.close();
      audio.srcObject = null;
      await api("POST", "/api/phone/close", {}).catch(() => {});
    },
  };
}
