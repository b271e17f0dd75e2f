import { describeProgress, printBuildProgress, type BuildProgress, type ProgressEvent } from "@sail/sdk";

const SPINNER = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏";

/**
 * Build progress on stderr, as `docker build` shows it: on a terminal one line redrawn in
 * place (the step, its detail, the seconds so far); elsewhere (CI logs, pipes) a line per step.
 * `end()` finishes the redrawn line.
 */
export function cliProgress(stream: NodeJS.WriteStream = process.stderr): { onProgress: (event: ProgressEvent) => void; end: () => void } {
  if (!stream.isTTY) return { onProgress: printBuildProgress((text) => void stream.write(text)), end: () => {} };
  let latest: BuildProgress | undefined;
  let frame = 0;
  let drawn = false;
  const draw = (progress: BuildProgress) => {
    const width = Math.max(20, (stream.columns || 100) - 1);
    const text = `${SPINNER[frame++ % SPINNER.length]} building ${describeProgress(progress)}`;
    stream.write(`\r\x1b[K${text.slice(0, width)}`);
    drawn = true;
  };
  return {
    onProgress: (event) => {
      if ("heartbeat" in event) {
        if (latest) draw({ ...latest, elapsedMs: event.heartbeat.elapsedMs });
        return;
      }
      if (event.progress.phase !== "image") {
        latest = undefined;
        return;
      }
      latest = event.progress;
      draw(latest);
    },
    end: () => {
      if (drawn) stream.write("\n");
      drawn = false;
    },
  };
}
