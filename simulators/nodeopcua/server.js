// node-opcua load server for scale, sampling-interval, deadband and operation-limit tests.
//
// asyncua's own server ignores requested sampling intervals, has no percent deadband, does not
// enforce operation limits and cannot update thousands of variables quickly; node-opcua does all
// of that. Start it through simulators/nodeopcua/launcher.py, or by hand:
//
//   node server.js --port 4850 --vars 5000 --period-ms 100 --max-nodes-per-call 1000
//
// Address space (namespace URI urn:edge-agent:simulators:nodeopcua, which is the server's
// application URI and therefore always namespace index 1):
//   Objects/1:LoadTest/1:Var00000 ... ns=1;s=Var00000 ...  Double, all changed every --period-ms
//   Objects/1:LoadTest/1:Fast                  ns=1;s=Fast   Double counter, +1 every 10 ms
//   Objects/1:LoadTest/1:Ramp                  ns=1;s=Ramp   Double triangle wave 0..100, step 1
//                                                            every 20 ms; AnalogItem, EURange 0..100
// Prints "READY <port> <namespaceIndex>" on stdout once it accepts connections; exits on SIGTERM/SIGINT.

import os from "node:os";
import path from "node:path";
import process from "node:process";
import { parseArgs } from "node:util";

import {
    DataType,
    MessageSecurityMode,
    OPCUACertificateManager,
    OPCUAServer,
    SecurityPolicy,
    Subscription,
    Variant,
} from "node-opcua";

const NAMESPACE_URI = "urn:edge-agent:simulators:nodeopcua";
const FAST_PERIOD_MS = 10;
const RAMP_PERIOD_MS = 20;
const RAMP_HIGH = 100;

function positiveInt(name, text) {
    const value = Number(text);
    if (!Number.isInteger(value) || value < 0) {
        throw new Error(`--${name} must be a non-negative integer, got ${text}`);
    }
    return value;
}

function parseOptions(argv) {
    const { values } = parseArgs({
        args: argv,
        options: {
            host: { type: "string", default: "127.0.0.1" },
            port: { type: "string", default: "4850" },
            vars: { type: "string", default: "5000" },
            "period-ms": { type: "string", default: "100" },
            "max-nodes-per-call": { type: "string", default: "1000" },
            "max-notifications-per-publish": { type: "string", default: "10000" },
            "max-sessions": { type: "string", default: "50" },
            secure: { type: "boolean", default: false },
            pki: { type: "string", default: path.join(os.homedir(), ".cache", "edge-agent-nodeopcua", "PKI") },
        },
        strict: true,
    });
    return {
        host: values.host,
        port: positiveInt("port", values.port),
        vars: positiveInt("vars", values.vars),
        periodMs: Math.max(1, positiveInt("period-ms", values["period-ms"])),
        maxNodesPerCall: positiveInt("max-nodes-per-call", values["max-nodes-per-call"]),
        maxNotificationsPerPublish: Math.max(1, positiveInt("max-notifications-per-publish", values["max-notifications-per-publish"])),
        maxSessions: positiveInt("max-sessions", values["max-sessions"]),
        secure: values.secure,
        pki: values.pki,
    };
}

function operationLimits(limit) {
    // Every limit node-opcua enforces (it answers BadTooManyOperations past it). History update and
    // node management stay 0 ("not exposed"): the server does not implement those services.
    return {
        maxNodesPerRead: limit,
        maxNodesPerWrite: limit,
        maxNodesPerBrowse: limit,
        maxNodesPerMethodCall: limit,
        maxNodesPerRegisterNodes: limit,
        maxNodesPerTranslateBrowsePathsToNodeIds: limit,
        maxMonitoredItemsPerCall: limit,
        maxNodesPerHistoryReadData: limit,
        maxNodesPerHistoryReadEvents: limit,
    };
}

function double(value) {
    return new Variant({ dataType: DataType.Double, value });
}

function addVariables(namespace, folder, count) {
    const variables = new Array(count);
    for (let i = 0; i < count; i++) {
        const name = `Var${String(i).padStart(5, "0")}`;
        variables[i] = namespace.addVariable({
            componentOf: folder,
            browseName: name,
            nodeId: `s=${name}`,
            dataType: "Double",
            value: double(i),
        });
    }
    return variables;
}

function startUpdates(namespace, folder, options) {
    const variables = addVariables(namespace, folder, options.vars);
    const fast = namespace.addVariable({
        componentOf: folder,
        browseName: "Fast",
        nodeId: "s=Fast",
        dataType: "Double",
        description: `Counter, +1 every ${FAST_PERIOD_MS} ms: a sampling interval of N ms yields one value per N ms`,
        value: double(0),
    });
    const ramp = namespace.addAnalogDataItem({
        componentOf: folder,
        browseName: "Ramp",
        nodeId: "s=Ramp",
        dataType: "Double",
        description: `Triangle wave 0..${RAMP_HIGH}, step 1 every ${RAMP_PERIOD_MS} ms, for deadband tests`,
        engineeringUnitsRange: { low: 0, high: RAMP_HIGH },
        value: double(0),
    });

    // Each round gives every variable a new value: i + round, so a reader can tell rounds apart.
    let round = 0;
    const timers = [
        setInterval(() => {
            round += 1;
            for (let i = 0; i < variables.length; i++) {
                variables[i].setValueFromSource(double(i + round));
            }
        }, options.periodMs),
    ];
    let counter = 0;
    timers.push(setInterval(() => fast.setValueFromSource(double(++counter)), FAST_PERIOD_MS));
    let step = 0;
    timers.push(
        setInterval(() => {
            step = (step + 1) % (2 * RAMP_HIGH);
            ramp.setValueFromSource(double(step <= RAMP_HIGH ? step : 2 * RAMP_HIGH - step));
        }, RAMP_PERIOD_MS),
    );
    return timers;
}

async function main() {
    const options = parseOptions(process.argv.slice(2));
    // The default 1000 notifications per publish, not the network, would cap throughput.
    Subscription.maxNotificationPerPublishHighLimit = options.maxNotificationsPerPublish;

    const server = new OPCUAServer({
        host: options.host, // bind only here; without it node-opcua listens on every interface
        hostname: options.host, // and advertise this in endpoint URLs
        port: options.port,
        // --secure: only signed and encrypted endpoints, with every policy the agent supports.
        securityModes: options.secure
            ? [MessageSecurityMode.Sign, MessageSecurityMode.SignAndEncrypt]
            : [MessageSecurityMode.None],
        securityPolicies: options.secure
            ? [SecurityPolicy.Basic256Sha256, SecurityPolicy.Aes128_Sha256_RsaOaep, SecurityPolicy.Aes256_Sha256_RsaPss]
            : [SecurityPolicy.None],
        allowAnonymous: true,
        serverCertificateManager: new OPCUACertificateManager({
            rootFolder: options.pki,
            automaticallyAcceptUnknownCertificate: true,
        }),
        serverInfo: {
            applicationUri: NAMESPACE_URI,
            productUri: "urn:edge-agent:simulators:nodeopcua:product",
            applicationName: { text: "Edge agent node-opcua load server", locale: "en" },
        },
        buildInfo: { productName: "edge-agent-nodeopcua-simulator", manufacturerName: "edge-agent" },
        serverCapabilities: {
            maxSessions: options.maxSessions, // PLCs allow few: 1 makes BadTooManySessions easy to test
            maxSubscriptionsPerSession: 50,
            operationLimits: operationLimits(options.maxNodesPerCall),
        },
    });
    await server.initialize();

    const addressSpace = server.engine.addressSpace;
    const namespace = addressSpace.getOwnNamespace();
    if (namespace.namespaceUri !== NAMESPACE_URI) {
        throw new Error(`own namespace is ${namespace.namespaceUri}, expected ${NAMESPACE_URI}`);
    }
    const folder = namespace.addFolder(addressSpace.rootFolder.objects, { browseName: "LoadTest", nodeId: "s=LoadTest" });
    const timers = startUpdates(namespace, folder, options);

    await server.start();
    const index = addressSpace.getNamespaceIndex(NAMESPACE_URI);
    process.stdout.write(`READY ${server.endpoints[0].port} ${index}\n`);

    let stopping = false;
    const stop = async () => {
        if (stopping) {
            return;
        }
        stopping = true;
        timers.forEach(clearInterval);
        await server.shutdown(0);
        process.exit(0);
    };
    process.on("SIGTERM", stop);
    process.on("SIGINT", stop);
}

main().catch((err) => {
    process.stderr.write(`node-opcua simulator failed: ${err && err.stack ? err.stack : err}\n`);
    process.exit(1);
});
