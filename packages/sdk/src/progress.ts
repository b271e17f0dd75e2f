import type { BuildProgress } from "@sail/protocol";
import type { ProgressEvent } from "./client.js";

/** While a build step lasts, a line this often says it still runs. */
const STILL_EVERY_MS = 30_000;

/** "debian_arm64: configuring (arm64, emulated) libc6 (95 s)". */
export function describeProgress(progress: BuildProgress): string {
  const detail = progress.detail ? ` ${progress.detail.length > 60 ? `${progress.detail.slice(0, 57)}...` : progress.detail}` : "";
  const what = progress.phase === "image" ? `${progress.step ?? "building"}${detail}` : `starting ${progress.sailboxId ?? "the box"}`;
  return `${progress.image}: ${what} (${Math.round(progress.elapsedMs / 1000)} s)`;
}

/**
 * The SDKs' default for a create's or a build's progress, as Modal prints its image builds: a
 * line on stderr when an image build reaches a new step, and every 30 s while one step lasts
 * (`sail: building debian_arm64: configuring (arm64, emulated) (95 s)`). A create that finds
 * its image built prints nothing.
 */
export function printBuildProgress(write: (text: string) => void = (text) => void process.stderr.write(text)): (event: ProgressEvent) => void {
  let step: string | undefined;
  let latest: BuildProgress | undefined;
  let printedAt = 0;
  const print = (progress: BuildProgress, still: boolean) => {
    write(`sail: ${still ? "still building" : "building"} ${describeProgress(progress)}\n`);
    printedAt = Date.now();
  };
  return (event) => {
    if ("heartbeat" in event) {
      if (latest && Date.now() - printedAt >= STILL_EVERY_MS) print({ ...latest, elapsedMs: event.heartbeat.elapsedMs }, true);
      return;
    }
    const progress = event.progress;
    if (progress.phase !== "image") {
      latest = undefined; // the build's last step ("ready") was printed
      return;
    }
    latest = progress;
    if (progress.step !== step) print(progress, false);
    else if (Date.now() - printedAt >= STILL_EVERY_MS) print(progress, true);
    step = progress.step;
  };
}
