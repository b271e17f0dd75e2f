import type { Command } from "commander";
import { Image } from "@sail/sdk";
import { collectStrings, imageLabel } from "./box/shared.js";
import { printJson } from "./output.js";
import { cliProgress } from "./progress.js";

export function registerImage(program: Command): void {
  const image = program.command("image").description("Images boxes start from: build one ahead, so no create waits for it");
  image
    .command("build")
    .description("Build an image on the daemon now (or find it built); progress on stderr. A first emulated build takes minutes")
    .argument("<image>", "debian, debian_amd64 or debian_arm64, as the SDKs name it (optionally +package,package)")
    .option("--apt <package>", "Debian package to add to the image (repeatable)", collectStrings, [] as string[])
    .option("--json", "print the image as JSON")
    .addHelpText("after", "\nExamples:\n  sail image build debian_arm64\n  sail image build debian --apt postgresql --apt redis-server\n  sail image build debian_arm64+python3-numpy")
    .action(async (name: string, opts: { apt: string[]; json?: boolean }) => {
      const progress = cliProgress();
      const started = Date.now();
      const built = await Image.fromName(name).aptInstall(opts.apt).build({ onProgress: progress.onProgress }).finally(progress.end);
      if (opts.json) return printJson(built);
      console.log(`Image ${imageLabel(built)} is ready (${Math.round((Date.now() - started) / 1000)} s)`);
    });
}
