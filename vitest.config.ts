import { defineConfig } from 'vitest/config';

// Tests mirror the modules under test/. Integration tests start real servers, so they get a longer
// timeout than pure unit tests; no test asserts on wall-clock time (benchmarks live in bench/).
export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    pool: 'forks',
    // Vitest's default is one fewer than the cores, so one file at a time on this 2-core machine; most files
    // wait on processes they start (elections, boots), so two at once nearly halves the run.
    maxWorkers: 2,
    reporters: ['default'],
  },
});
