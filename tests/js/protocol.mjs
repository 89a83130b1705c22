// The JSON-lines side both Node.js drivers share: one event per line on stdout.

// Emits one event. Pipes are synchronous on Linux, so a single write is flushed at once.
export function emit(event) {
    process.stdout.write(JSON.stringify(event, safeReplacer()) + "\n");
}

// Replies built by the clients may carry transports, XHR objects and functions: drop what JSON
// can't carry, print errors as text and break cycles.
function safeReplacer() {
    const seen = new WeakSet();
    return (key, value) => {
        if (typeof value === "function" || key === "transport") {
            return undefined;
        }
        if (value instanceof Error) {
            return String(value);
        }
        if (typeof value === "object" && value !== null) {
            if (seen.has(value)) {
                return undefined;
            }
            seen.add(value);
        }
        return value;
    };
}
