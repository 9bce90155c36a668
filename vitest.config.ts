import { defineConfig } from 'vitest/config';

// Tests mirror the modules under test/. Integration tests start real servers, so they get a longer
// timeout than pure unit tests; no test asserts on wall-clock time (benchmarks live in bench/).
export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    pool: 'forks',
    reporters: ['default'],
  },
});
