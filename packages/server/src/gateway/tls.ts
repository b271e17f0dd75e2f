import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import forge from "node-forge";

export interface TlsMaterial {
  key: string;
  cert: string;
  /** The local CA's certificate (absent when a given certificate is served). */
  caCert?: string;
}

const CA_YEARS = 10;
const LEAF_DAYS = 397; // browsers refuse leaf certificates valid for longer (CA/B Forum)

/**
 * A local CA created on first start under `<dataDir>/tls`, and a wildcard leaf for
 * `*.<domain>` signed by it. The leaf is re-issued when the domain changes or it nears
 * expiry; the CA stays, so a trust installed once keeps working.
 */
export function ensureLocalTls(tlsDir: string, domain: string): TlsMaterial {
  mkdirSync(tlsDir, { recursive: true, mode: 0o700 });
  const caKeyPath = join(tlsDir, "ca.key");
  const caCertPath = join(tlsDir, "ca.crt");
  if (!existsSync(caKeyPath) || !existsSync(caCertPath)) {
    const ca = issueCa();
    writeFileSync(caKeyPath, ca.key, { mode: 0o600 });
    writeFileSync(caCertPath, ca.cert);
  }
  const caKey = forge.pki.privateKeyFromPem(readFileSync(caKeyPath, "utf8"));
  const caCertPem = readFileSync(caCertPath, "utf8");
  const caCert = forge.pki.certificateFromPem(caCertPem);

  const leafKeyPath = join(tlsDir, `${domain}.key`);
  const leafCertPath = join(tlsDir, `${domain}.crt`);
  if (!leafIsFresh(leafCertPath, caCert)) {
    const leaf = issueLeaf(domain, caKey, caCert);
    writeFileSync(leafKeyPath, leaf.key, { mode: 0o600 });
    writeFileSync(leafCertPath, leaf.cert);
  }
  return { key: readFileSync(leafKeyPath, "utf8"), cert: readFileSync(leafCertPath, "utf8"), caCert: caCertPem };
}

/** A certificate and key the operator gave (e.g. a real wildcard for their domain). */
export function loadGivenTls(certPath: string, keyPath: string): TlsMaterial {
  return { cert: readFileSync(certPath, "utf8"), key: readFileSync(keyPath, "utf8") };
}

function serial(): string {
  return "01" + forge.util.bytesToHex(forge.random.getBytesSync(15));
}

function issueCa(): { key: string; cert: string } {
  const keys = forge.pki.rsa.generateKeyPair(2048);
  const cert = forge.pki.createCertificate();
  cert.publicKey = keys.publicKey;
  cert.serialNumber = serial();
  cert.validity.notBefore = new Date(Date.now() - 60_000);
  cert.validity.notAfter = new Date(Date.now() + CA_YEARS * 365 * 86_400_000);
  const subject = [
    { name: "commonName", value: "Sail local CA" },
    { name: "organizationName", value: "Sail" },
  ];
  cert.setSubject(subject);
  cert.setIssuer(subject);
  cert.setExtensions([{ name: "basicConstraints", cA: true, critical: true }, { name: "keyUsage", keyCertSign: true, cRLSign: true, critical: true }, { name: "subjectKeyIdentifier" }]);
  cert.sign(keys.privateKey, forge.md.sha256.create());
  return { key: forge.pki.privateKeyToPem(keys.privateKey), cert: forge.pki.certificateToPem(cert) };
}

function issueLeaf(domain: string, caKey: forge.pki.PrivateKey, caCert: forge.pki.Certificate): { key: string; cert: string } {
  const keys = forge.pki.rsa.generateKeyPair(2048);
  const cert = forge.pki.createCertificate();
  cert.publicKey = keys.publicKey;
  cert.serialNumber = serial();
  cert.validity.notBefore = new Date(Date.now() - 60_000);
  cert.validity.notAfter = new Date(Date.now() + LEAF_DAYS * 86_400_000);
  cert.setSubject([{ name: "commonName", value: `*.${domain}` }]);
  cert.setIssuer(caCert.subject.attributes);
  cert.setExtensions([
    { name: "basicConstraints", cA: false },
    { name: "keyUsage", digitalSignature: true, keyEncipherment: true, critical: true },
    { name: "extKeyUsage", serverAuth: true },
    {
      name: "subjectAltName",
      altNames: [
        { type: 2, value: `*.${domain}` },
        { type: 2, value: domain },
      ],
    },
  ]);
  cert.sign(caKey as forge.pki.rsa.PrivateKey, forge.md.sha256.create());
  return { key: forge.pki.privateKeyToPem(keys.privateKey), cert: forge.pki.certificateToPem(cert) };
}

/** Valid for at least 30 more days and signed by the current CA. */
function leafIsFresh(path: string, caCert: forge.pki.Certificate): boolean {
  if (!existsSync(path)) return false;
  try {
    const leaf = forge.pki.certificateFromPem(readFileSync(path, "utf8"));
    return leaf.validity.notAfter.getTime() > Date.now() + 30 * 86_400_000 && caCert.verify(leaf);
  } catch {
    return false;
  }
}
